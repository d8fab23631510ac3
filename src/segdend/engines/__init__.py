"""Simulation engines: the step-by-step reference and the fast engines (MODEL.md 2-9).

Every engine has the same small contract (:class:`segdend.engines.base.Engine`): train on a
batch of examples in the given order, updating parameters and the carried state in place;
test a batch of images from a cleared state. :func:`get_engine` picks one for a config.
"""
