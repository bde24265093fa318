Rails.application.routes.draw do
  root "greetings#show"
  post "/greetings", to: "greetings#create", as: :greetings
  get "/stream", to: "streams#show"
  get "/action_cable.js", to: "greetings#action_cable_js"
end
