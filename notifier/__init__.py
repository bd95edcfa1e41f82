"""The notifier: delivers events to webhook subscriptions, and serves SubscriptionsService."""
