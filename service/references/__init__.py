"""Reference models of a model, kept for per-example membership tests of its later jobs.

For a model whose version names its registered training data and recipe, ``POST
/v1/models/{name}/references`` queues a job (on the same queue, under the same model lock) that
trains K models with that recipe, each on a random half of the data (every sample IN for ⌊K/2⌋ of
them), and keeps their safetensors checkpoints with the membership mask and a content key of
every sample. Each later deletion job then runs offline LiRA (``unlearning.membership``) on its
forget samples against the references that did not train on them (``check.py``), and records the
TPR at fixed FPRs beside the level a retrained model gives (``docs/methods.md``). A set holds
the samples it was trained on, so the publish of an erasure of any of them retires it and deletes
its blobs after the commit (``retirement.py``), once the erasing job's own test has run.
"""
