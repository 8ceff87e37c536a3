"""The servers under test, one small app module per peer.

ASGI apps are `app` attributes served by uvicorn; `websockets_native.serve` is the
`websockets` package's own server. Every app speaks the same three routes where it can:

- `/echo`: each text message straight back;
- `/ok`: "OK!" for each message;
- `/rooms/{room}/{user}`: each text message goes to every *other* member of the room as
  `"{user}: {text}"`.
"""
