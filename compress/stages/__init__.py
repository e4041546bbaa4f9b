"""The stages: one module per technique, each registering itself with
`compress.stages.base.register`; `compress.stages.base.load_stages` imports them."""
