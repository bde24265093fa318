# frozen_string_literal: true

require "sinatra/base"

# A typical small Sinatra route: a path parameter, a query parameter, an ERB template.
class BenchSinatra < Sinatra::Base
  set :views, File.join(__dir__, "views")
  set :logging, false

  get "/hello/:name" do
    @name = params[:name]
    @items = Array.new(Integer(params.fetch("n", "10"))) { |i| "item #{i}" }
    erb :page
  end
end
