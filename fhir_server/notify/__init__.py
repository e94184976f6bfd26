"""Notifications (issue 12 item 7): R4 Subscriptions Backport rest-hooks and patient emails,
queued in MongoDB with the write that causes them and delivered by a worker with retries.

- `table.py`: profiles/portal/notifications.json (topics, channel rules, retries, email).
- `backport.py`: the Subscription as the backport reads it; notification Bundles.
- `routes.py`: Subscription create / read / search / delete and `$status`, the caller's own.
- `subscribers.py`: who a message is for (pools, the child-under-12 rule, the email address).
- `workflow.py`: the `after` step that queues notifications in the write's transaction.
- `queue.py`: the two collections; claims by conditional update with a lease.
- `worker.py`, `delivery.py`: the delivery loop; rest-hook POST, SMTP or the outbox folder.

See docs/portal.md, "Notifications".
"""
