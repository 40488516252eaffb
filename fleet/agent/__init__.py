"""The node agent: joins the fleet, reports its GPUs, streams telemetry, serves queue node.<name>.

It imports no Django and holds no database credentials: it talks to the console only through
Redis (tasks on the "console" queue, telemetry to the channel layer).
"""
