"""The RPC handlers, one class per resource; api/servicer.py composes them.

Each handler checks the request's shape, converts it, and calls one service method; the
services apply the domain rules and enforce tenancy, so handlers pass ids, never tenants.
"""
