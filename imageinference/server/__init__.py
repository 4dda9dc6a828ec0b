"""The task endpoint: the hosted API's wire protocol (JSON arrays of tasks over REST and WebSocket) on ComfyUI's
own server.

Pure modules (config, protocol, auth, store, sqlite_store, sessions, delivery, search, uploads, plan, progress,
service, routes) know nothing of ComfyUI; `comfy_engine` and `install` are the thin adapters onto
`server.PromptServer`. The nodes package and this package never import each other (the pack's entry point joins
them).
"""
