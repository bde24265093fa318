# Every subscriber streams "shouts"; a subscriber's `shout` is broadcast to all of them from the
# process holding its connection, so it reaches the sender even when the async adapter cannot
# reach other cluster workers.
class ShoutChannel < ApplicationCable::Channel
  def subscribed
    stream_from "shouts"
  end

  def shout(data)
    ActionCable.server.broadcast("shouts", { "text" => data["text"].to_s, "pid" => Process.pid })
  end
end
