# frozen_string_literal: true

raise "this app cannot boot"
