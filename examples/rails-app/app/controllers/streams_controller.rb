# A streamed response: ActionController::Live writes each line as it is made, so the server
# sends it as a chunk of its own while the action is still running.
class StreamsController < ApplicationController
  include ActionController::Live

  CHUNKS = 5

  def show
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    # Rack 2.2's Rack::ETag (in Rails' middleware) reads a whole body to hash it unless the
    # response already has a validator: without this header the stream would arrive in one piece.
    response.headers["Last-Modified"] = Time.now.httpdate
    CHUNKS.times do |i|
      response.stream.write("line #{i + 1} of #{CHUNKS} from process #{Process.pid}\n")
      sleep 0.05 # a slow producer: the lines leave one by one
    end
  ensure
    response.stream.close
  end
end
