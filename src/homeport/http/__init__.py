"""The ground floor every face stands on: the site and root dispatch, replies and the
Consul-style read cache (``api``), errors to statuses, query arguments, CORS, metrics and
the token check.  Nothing here imports a face."""
