# frozen_string_literal: true

module Catamount
  # The fiber mode (`fiber_scheduler`): a pool thread's loop and its Fiber scheduler (Ruby 3.1's
  # Fiber::Scheduler hooks). Each request runs in a non-blocking Fiber of its own (one a finished
  # request left idle, its fiber-locals cleared, or a new one); when one waits (a
  # socket, `sleep`, a Mutex or Queue, `Timeout.timeout`, a name lookup) the thread runs the
  # others, and takes new requests up to `max_fibers_per_thread`. The thread's one wait, for
  # descriptors, the earliest timer, a new request or a wake-up from another thread, is native
  # (Native::FiberWorker#wait, without the GVL).
  #
  # Fibers switch by `transfer` (Native::FiberWorker#run and #park): the loop runs in the
  # thread's root fiber, a waiting fiber transfers back to it, and a fiber that ends returns to
  # it.
  #
  # `request_timeout`: each fiber the loop runs belongs to a request fiber (its *owner*: itself,
  # or the request fiber that resumed it), which the native side knows while it runs, so the
  # watch's raise into the thread lands in it. An overdue request that waits is raised into
  # here: the watch lists it (`@worker.overdue`) and rings, the loop wakes its waiting fibers
  # and `park` raises in the first of them to run.
  #
  # Turns: a request fiber that runs Ruby for a whole tick without waiting is asked by the ext's
  # turn job (crates/catamount-ext/src/turns.rs) to give way (`give_turn`): the loop runs the
  # thread's other ready fibers, then resumes it.
  class FiberScheduler
    # Where Catamount's own Ruby lives: no turn in it (this scheduler's books change in steps no
    # other fiber of the thread may see halfway).
    OWN_CODE = "#{File.expand_path("..", __dir__)}/"

    # Raised where a request waits when its thread leaves without it (killed, or its loop
    # failed): not a StandardError, so the app's `rescue => e` lets it through.
    class Abandoned < Exception; end # rubocop:disable Lint/InheritException

    # Idle request fibers a thread keeps when it goes idle (the rest end: `trim_idle`).
    KEEP_IDLE = 4
    # Passed to an idle request fiber to make it end.
    TRIM = Object.new.freeze

    # `Thread#wakeup` and `#run` (prepended to Thread in the fiber mode): Ruby tells no
    # scheduler, so a fiber-mode pool thread's fibers sleeping without a duration would never
    # wake (a thread-mode `sleep` returns).
    module WakesSleepers
      def wakeup
        thread_variable_get(:catamount_fiber_scheduler)&.wake_sleepers
        super
      end

      def run
        thread_variable_get(:catamount_fiber_scheduler)&.wake_sleepers
        super
      end
    end

    # A thread's life in the fiber mode: runs the loop until the queue lets the thread go.
    def self.run(server, app, limit)
      worker = server.fiber_worker
      scheduler = new(worker)
      Fiber.set_scheduler(scheduler)
      Thread.prepend(WakesSleepers) unless Thread <= WakesSleepers
      Thread.current.thread_variable_set(:catamount_fiber_scheduler, scheduler)
      scheduler.serve(server, app, limit)
    ensure
      scheduler&.abandon
      scheduler&.stop_raiser
      worker&.finish
    end

    def initialize(worker)
      @worker = worker
      @root = Fiber.current
      @thread = Thread.current
      @count = 0 # fibers alive (requests, and fibers they scheduled)
      @background = 0 # of which fibers the requests scheduled (`fiber`)
      @sleepers = {} # fiber => true while it sleeps without a duration (`wake_sleepers`)
      @woken = false # `wake_sleepers` was called
      @ready = [] # [fiber, value, owner] to transfer to, in order
      @batch = [] # what `run_ready` took from @ready and has not run yet
      @parked = {} # fiber => its owner while it waits for a wake
      @io = {} # fiber => [fd, events] while it waits on a descriptor
      @timers = [] # [deadline, callback], sorted; a cancelled one has a nil callback
      @raises = {} # fiber => [class, args] to raise when it wakes (`timeout_after`)
      @unblocked = [] # fibers another thread woke (Array#push is atomic under the GVL)
      @idle = [] # request fibers waiting for their next request (see `request_fiber`)
      @idle_limit = 0 # set by `serve`: at most `max_fibers_per_thread` idle
      @owner = nil # the owner of the fibers running now
      @overdue = {} # owner => message: request_timeout passed, to raise in its next fiber to run
      @watched = worker.watched?
      @abandoning = false
      @turned = [] # [fiber, value, owner] of fibers that gave their turn, to run after the others
      @raise_later = {} # fiber => [class, args, a Timeout's?]: see `raise_later`
      @raiser = nil # the Queue of the thread that raises them
      @probe = nil # a TracePoint never enabled (`inside_a_hook?`)
    end

    # The loop: run ready fibers, take a request, wait. Returns when the thread should end.
    #
    # A request is taken only when every fiber of the thread waits (as a thread-mode thread
    # takes one only once free): a thread about to run a busy request does not take another
    # that a free thread could run.
    def serve(server, app, limit)
      @idle_limit = limit
      # `while`, not `loop`: a block call per turn is measurable on hello world.
      while true
        if @count.zero?
          trim_idle if @idle.size > KEEP_IDLE
          return unless @worker.take(true)

          start_request(server, app)
          # A request that never waited is over: nothing of the thread's is left to run.
          next if @count.zero?
        end
        run_ready
        # With no request left the loop's top takes the next one (waiting if none is queued);
        # the timers left were all cancelled.
        if @count.zero?
          @timers.clear
          next
        end

        if @ready.empty? && @turned.empty? && @unblocked.empty? && @count < limit && @worker.take(false)
          start_request(server, app)
          next
        end
        if @count == @background
          # Only fibers the requests scheduled are left, outliving them: the thread is idle
          # (as a thread-mode thread whose request started a Thread), and leaves as an idle one
          # does (a stop, a trim), their `abandon` ending them.
          return unless (again_in = @worker.idle_in_background)

          wait(@count < limit, again_in)
        else
          wait(@count < limit)
        end
      end
    end

    # --- hooks Ruby calls from a non-blocking fiber of this thread ---

    def io_wait(io, events, timeout)
      fiber = Fiber.current
      @io[fiber] = [io.fileno, events]
      timer = timeout && after(timeout) { wake(fiber, false) }
      park
    ensure
      @io.delete(fiber)
      cancel(timer)
    end

    def kernel_sleep(duration = nil)
      fiber = Fiber.current
      if duration
        timer = after(duration) { wake(fiber, true) }
      else
        @sleepers[fiber] = true
      end
      park
      true
    ensure
      cancel(timer)
      @sleepers.delete(fiber)
    end

    # `Thread#wakeup`/`#run` on this thread (from any thread): its fibers sleeping without a
    # duration wake, as a thread's `sleep` returns. Which fiber the caller meant is unknown;
    # a `sleep` with a duration is left to end at its time (waking it would cut the
    # neighbours' sleeps short).
    def wake_sleepers
      return if @sleepers.empty? # nobody to wake: no stale wake-up for a later sleep

      @woken = true
      @worker.ring unless Thread.current == @thread
    end

    # A Mutex, Queue or ConditionVariable (or a Thread#join) blocks the fiber until `unblock`.
    def block(_blocker, timeout = nil)
      fiber = Fiber.current
      timer = timeout && after(timeout) { wake(fiber, false) }
      park
    ensure
      cancel(timer)
    end

    # May be called from any thread.
    def unblock(_blocker, fiber)
      @unblocked << fiber
      @worker.ring unless Thread.current == @thread
    end

    def timeout_after(duration, klass, *args)
      fiber = Fiber.current
      timer = after(duration) do
        @raises[fiber] = [klass, args]
        wake(fiber, nil)
      end
      yield duration
    ensure
      cancel(timer)
      @raises.delete(fiber)
      drop_raise_later(fiber, timeout: true) unless @raise_later.empty?
    end

    # getaddrinfo does not go through the scheduler: it runs on a thread of its own while this
    # fiber waits for it (a Thread#join, served by `block`/`unblock`).
    def address_resolve(hostname)
      host = hostname.sub(/%.*\z/, "")
      on_helper_thread do
        Addrinfo.getaddrinfo(host, nil, nil, :STREAM).map(&:ip_address).uniq
      rescue SocketError
        []
      end
    end

    # `Process.wait`, `system`, backticks and the like: the wait runs on a thread of its own
    # while this fiber waits for it (a Thread#join, served by `block`/`unblock`).
    def process_wait(pid, flags)
      on_helper_thread { Process::Status.wait(pid, flags) }
    end

    # `Fiber.schedule`: the fiber starts on the loop's next turn (its own owner: an overdue
    # request does not end the fibers it scheduled).
    def fiber(&block)
      fiber = new_fiber(&block)
      @ready << [fiber, nil, fiber]
      @worker.want_turns
      fiber
    end

    # Nothing to run: the loop ran the requests' fibers to their end before the thread left,
    # and `abandon` ended the fibers they scheduled.
    def close; end

    # The thread leaves: the raising thread (if any) ends once it has delivered what it holds.
    def stop_raiser
      @raiser&.close
    end

    # The thread leaves with requests in fibers (it was killed, or its loop failed): each is
    # run once more, a request not started only to drop it (its connection closed), a started
    # one to unwind it (`Abandoned` raised where it waits), so its connection is answered or
    # closed and its books closed at once; a suspended fiber's native frames would never be
    # unwound, nor its connection closed. One that waits again while unwinding gets it again, a
    # few times.
    def abandon
      @abandoning = true
      3.times do
        fibers = (@parked.keys + [@ready, @turned, @batch].flat_map { |list| list.map(&:first) })
                 .uniq.select(&:alive?)
        break if fibers.empty?

        @parked.clear
        @ready.clear
        @turned.clear
        @batch.clear
        fibers.each { |fiber| @worker.run(fiber, fiber, nil, 0) if fiber.alive? }
      end
    end

    # The turn job (the ext's turns.rs), in the request fiber the loop runs, which has run Ruby
    # for a whole tick without waiting: unless it has nothing to give way to, or is somewhere a
    # switch must not happen, it goes behind the thread's ready fibers and the loop runs them; it
    # is resumed here. Nothing may be raised out of here (Ruby's postponed jobs swallow it): a
    # raise due when it resumes is raised once it runs on (`raise_later`).
    def give_turn
      return if @count < 2 && @timers.empty? && !@worker.overdue_waiting?
      # A blocking fiber asked for no scheduler; an exception already queued for the thread is
      # raised right after the job; a hook (a TracePoint) must not stay running while it waits.
      return if Fiber.blocking? || Thread.pending_interrupt? || inside_a_hook?

      where = caller_locations(1, 1).first
      return if where.nil? || where.path.start_with?(OWN_CODE)

      fiber = Fiber.current
      @turned << [fiber, nil, @owner]
      @worker.park(@root)
      if @abandoning
        raise_later(fiber, Abandoned, ["its pool thread left"])
      elsif @watched && (message = @overdue.delete(@owner))
        raise_later(fiber, RequestTimeout, [message])
      elsif (raising = @raises.delete(fiber))
        raise_later(fiber, *raising, timeout: true)
      end
    end

    private

    # Runs the block on a Ruby thread of its own while this fiber waits for it (a Thread#join,
    # served by `block`/`unblock`). A wait left early (a Timeout, request_timeout, the thread
    # leaving) kills the helper and waits for it to end: it must not go on for nobody (a
    # `Process.wait(-1)` would reap a child another request waits for), and a kill lands only
    # when the helper next runs. Its exception is the caller's (`value`), not reported.
    def on_helper_thread(&work)
      helper = Thread.new do
        Thread.current.report_on_exception = false
        work.call
      end
      helper.value
    ensure
      if helper&.alive?
        helper.kill
        helper.join
      end
    end

    # The thread goes idle after a burst: its idle request fibers beyond KEEP_IDLE (the oldest)
    # end, unless requests are queued for it to take now.
    def trim_idle
      return if @worker.queued?

      @idle.shift(@idle.size - KEEP_IDLE).each { |fiber| @worker.run(fiber, fiber, TRIM, 0) }
    end

    # Runs the request the worker just took, now (only called with nothing else ready, so no
    # fiber is passed over), in an idle fiber of the thread or a new one. A new Fiber per request
    # (its creation, its stack, its first switch) made hello world about 40% slower than the
    # thread mode.
    def start_request(server, app)
      @count += 1
      fiber = @idle.pop || request_fiber(server, app)
      @owner = fiber
      @worker.run(fiber, fiber, nil, @count)
      @owner = nil
    end

    # A request's fiber: serves the oldest request the worker took, then, if nothing of the
    # request is left in it, waits in @idle until it is switched to for the next one. It ends
    # instead when the request left by an exception or a jump, or enough fibers are idle already.
    # Fiber-locals (`Thread.current[:x]`) are the request's own: cleared for the next one (`[]=`
    # nil deletes the key; `keys` on the thread reads the running fiber's).
    def request_fiber(server, app)
      Fiber.new(blocking: false) do
        fiber = Fiber.current
        while true
          begin
            server.serve_job(@worker, app)
            locals = @thread.keys
            locals.each { |key| @thread[key] = nil } unless locals.empty?
          rescue Exception => e # rubocop:disable Lint/RescueException
            ended_by(e)
            @parked.delete(fiber)
            break
          ensure
            @count -= 1
            @overdue.delete(fiber)
            # A wake-up another thread sent for a wait of this request must not end the next one's.
            @unblocked.delete(fiber) unless @unblocked.empty?
            drop_raise_later(fiber) unless @raise_later.empty?
          end
          # The thread is leaving (`abandon` unwound this request): no next request here.
          break if @abandoning

          # Nothing else of the thread's is alive: the loop would take the next request and
          # switch to this fiber (the idle list's last) to serve it. Done here instead, without
          # the two switches (this fiber is still the one `run` named to the watch).
          # `take(true)` false (the thread should end): the loop's own take says so too. After a
          # burst (more idle fibers than kept) the loop takes it instead, trimming first.
          if @count.zero? && @idle.size <= KEEP_IDLE
            @timers.clear unless @timers.empty? # all cancelled: no fiber waits
            if @worker.take(true)
              @count += 1
              next
            end
          end
          break if @idle.size >= @idle_limit

          @idle << fiber
          break if @worker.park(@root).equal?(TRIM)
        end
      end
    end

    # The request was answered (serve_job answers the app's errors); this is Ruby's own (a
    # kill, a jump): the thread goes on with its other fibers.
    def ended_by(error)
      warn("catamount: fiber ended by #{error.class}: #{error.message}") unless error.is_a?(SystemExit)
    end

    def new_fiber(&block)
      @count += 1
      @background += 1
      Fiber.new(blocking: false) do
        block.call
      rescue Exception => e # rubocop:disable Lint/RescueException
        ended_by(e)
      ensure
        @count -= 1
        @background -= 1
        @parked.delete(Fiber.current)
        @overdue.delete(Fiber.current)
        drop_raise_later(Fiber.current) unless @raise_later.empty?
      end
    end

    # A raise due in `fiber` when it resumed inside the turn job, where raising is lost: raised
    # into this thread by another (`deliver`) once the fiber runs past the job (it lands there at
    # its next interrupt check, as `request_timeout`'s raise does), or by `park` if it waits
    # first. Dropped if its request ends first (or, for a `Timeout`'s, its block).
    def raise_later(fiber, klass, args, timeout: false)
      @raise_later[fiber] = [klass, args, timeout]
      @raiser ||= Thread::Queue.new.tap do |queue|
        Thread.new do
          while (waiting = queue.pop)
            deliver(waiting)
          end
        end
      end
      @raiser << fiber
    end

    # On the raising thread: waits, a few ms at a time, until `fiber` runs on the pool thread
    # outside the turn job, then raises its exception into the thread (the check and the raise
    # are one native call, holding the GVL). A few ms late at most while the fiber runs Ruby.
    def deliver(fiber)
      while @thread.alive? && (pending = @raise_later.delete(fiber))
        klass, args, = pending
        return if @worker.raise_into(@thread, fiber, klass.exception(*args))

        @raise_later[fiber] = pending
        sleep 0.005
      end
    end

    # `park`'s share: the fiber waits before `deliver` raised.
    def raise_pending(fiber)
      klass, args, = @raise_later.delete(fiber)
      raise klass, *args if klass
    end

    def drop_raise_later(fiber, timeout: false)
      pending = @raise_later[fiber]
      return if pending.nil? || (timeout && !pending[2])

      @raise_later.delete(fiber)
    end

    # Whether a hook (a TracePoint's callback) runs now: reading a TracePoint's event anywhere
    # else raises.
    def inside_a_hook?
      @probe ||= TracePoint.new {}
      @probe.event
      true
    rescue RuntimeError
      false
    end

    # Gives the thread back to the loop until `wake`; returns the wake's value, or raises what
    # `timeout_after` or request_timeout asked for.
    def park
      fiber = Fiber.current
      @parked[fiber] = @owner
      value = @worker.park(@root)
      raise_pending(fiber) unless @raise_later.empty?
      raise Abandoned, "its pool thread left" if @abandoning
      if @watched && (message = @overdue.delete(@owner))
        raise RequestTimeout, message
      end
      if (raising = @raises.delete(fiber))
        klass, args = raising
        raise klass, *args
      end
      value
    end

    def wake(fiber, value)
      return unless @parked.key?(fiber)

      @ready << [fiber, value, @parked.delete(fiber)]
    end

    # The requests the watch found overdue while they waited: their waiting fibers wake, and
    # the first of them to run raises.
    def take_overdue
      @worker.overdue.each do |owner, message|
        @overdue[owner] = message
        @parked.select { |_, o| o.equal?(owner) }.each_key { |fiber| wake(fiber, nil) }
      end
    end

    def after(seconds, &callback)
      # A timer can end the running fiber's turn (a `Timeout` of a request that never waits).
      @worker.want_turns if @timers.empty?
      entry = [now + seconds, callback]
      index = @timers.bsearch_index { |t| t[0] > entry[0] }
      @timers.insert(index || @timers.size, entry)
      entry
    end

    def cancel(timer)
      timer[1] = nil if timer
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # Runs each fiber ready now once (ones made ready meanwhile wait for the next turn, so a
    # fiber that yields in a loop does not keep the thread from its wait).
    def run_ready
      take_unblocked
      # Kept where `abandon` finds what is not run yet (the thread may die in this pass).
      @batch = ready = @ready
      @ready = []
      while (entry = ready.shift)
        fiber, value, owner = entry
        next unless fiber.alive?

        @owner = owner
        # An unblock still pending for it was for the wait it is leaving, not its next one.
        @unblocked.delete(fiber) unless @unblocked.empty?
        @worker.run(fiber, owner, value, @count)
      end
      @owner = nil
    end

    def take_unblocked
      take_overdue if @watched
      while (fiber = @unblocked.shift)
        wake(fiber, true)
      end
      return unless @woken

      @woken = false
      @sleepers.each_key { |fiber| wake(fiber, true) }
    end

    # `again_in`: seconds after which the loop must ask the queue again (only fibers its
    # requests scheduled are left: `idle_in_background`).
    def wait(take, again_in = nil)
      fire_timers
      take_unblocked
      timeout = @ready.empty? && @turned.empty? ? next_timeout : 0
      timeout = again_in if again_in && again_in < (timeout || Float::INFINITY)
      waits = @io.to_a
      revents = @worker.wait(waits.map { |_, w| w[0] }, waits.map { |_, w| w[1] }, timeout, take)
      waits.each_with_index do |(fiber, (_fd, events)), i|
        ready = revents[i]
        # An error or hang-up wakes the wait too: the fiber's next read or write meets it.
        wake(fiber, (ready & events).nonzero? || events) if ready&.positive?
      end
      fire_timers
      # Fibers that gave their turn run after the ones this wait made ready.
      unless @turned.empty?
        @ready.concat(@turned)
        @turned.clear
      end
    end

    def next_timeout
      @timers.shift while @timers.first && @timers.first[1].nil?
      first = @timers.first
      first && [first[0] - now, 0].max
    end

    def fire_timers
      return if @timers.empty?

      t = now
      while (first = @timers.first) && first[0] <= t
        @timers.shift
        first[1]&.call
      end
    end
  end
end
