"""HTTP/1.1 on asyncio protocols: the server side (`server`), the backend client (`client`).

Parsing on both sides is httptools (llhttp, strict: no obs-fold, no bare LF, no CL+TE); the
framing, flow control, deadlines and keep-alive rules are ours, small and tested.
"""
