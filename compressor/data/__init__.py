"""Datasets held in memory with fixed, seeded, stratified splits (`datasets`).

`datasets.load_dataset(ref, ...)` reads `digits`, `imagefolder:PATH`,
`npz:PATH` or a torchvision set and returns a `Dataset` whose `identity`
keys the teacher-logits cache.
"""
