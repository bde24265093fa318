# frozen_string_literal: true

require "greeting"
run ->(_env) { [200, {}, [Greeting::TEXT]] }
