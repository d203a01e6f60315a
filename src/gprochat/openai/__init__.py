"""The OpenAI shapes that the client and the gateway share.

``types``: the response objects (``ChatCompletion``, ``ChatCompletionChunk``, ...), shaped
like openai-python's; ``requests``: the gateway's request and error models;
``params``: the one table of which OpenAI parameters are passed, ignored or refused;
``builder``: turns a stream of text into those objects, and chunks into SSE JSON.

Nothing here knows HTTP or the GeminiProChat protocol: ``gprochat.client`` puts these
shapes over the provider, ``gprochat.server.gateway`` over the server's backends.
"""
