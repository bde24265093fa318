class ApplicationController < ActionController::Base
  # Rails' default, said out loud: a POST without the form's token is refused (422).
  protect_from_forgery with: :exception
end
