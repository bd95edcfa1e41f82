-- A subscription's deliveries, the most recently read first (SubscriptionsService.ListDeliveries).
CREATE INDEX deliveries_of_subscription ON notifier.deliveries (subscription_id, seq);
