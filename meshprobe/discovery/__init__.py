"""Kubernetes discovery: annotated Services, Linkerd mirrors, peers and the trust ConfigMap.

Layers, lowest first: `rbac` (the API calls we may make), `client` (kubernetes-asyncio set-up
and the one request shape we use), `watch` (the generic list/watch loop), `services`/`trustmap`
(what an object means), `catalog` (objects → targets and peers), `merge` (static + discovered) and
`manager` (runs it all for the daemon). Its settings live in `meshprobe.config.discovery`, so
`meshprobe check` never loads the client.
"""
