"""The wire contract: the floor every other package stands on.

Events (:mod:`contracts.events`), topic declarations (:mod:`contracts.topics`), id rules and published text
(:mod:`contracts.ids`) and action weights (:mod:`contracts.actions`). Producers, the worker, the trainers and the
demo all import these; this package imports nothing of ours (only pydantic and the standard library), so a
producer can publish events without pulling in the engine.
"""
