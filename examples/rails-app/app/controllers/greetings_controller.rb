# The page: a form (form_with puts the CSRF token in it), the name it posts kept in the cookie
# session with a visit count, and an ActionCable subscription (app/views/greetings/show).
class GreetingsController < ApplicationController
  # Forgery protection refuses JavaScript to a plain GET (a cross-origin <script> could read it);
  # this script is public.
  skip_forgery_protection only: :action_cable_js

  def show
    session[:visits] = session[:visits].to_i + 1
    @name = session[:name]
    @visits = session[:visits]
  end

  def create
    session[:name] = params.require(:name)
    redirect_to root_path
  end

  # ActionCable's browser client, served from the installed actioncable gem (no asset pipeline
  # here: the app is generated without sprockets and JavaScript tooling).
  def action_cable_js
    path = File.join(Gem.loaded_specs.fetch("actioncable").full_gem_path, "app/assets/javascripts/action_cable.js")
    send_file path, type: "text/javascript", disposition: "inline"
  end
end
