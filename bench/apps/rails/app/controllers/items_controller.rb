# frozen_string_literal: true

# Renders one item with a few attributes and a list: a typical small show action.
class ItemsController < ApplicationController
  def show
    @item = { id: params[:id], name: "Item #{params[:id]}", price: "9.99", tags: %w[red green blue] }
    @related = Array.new(10) { |i| { id: i, name: "Related #{i}" } }
  end
end
