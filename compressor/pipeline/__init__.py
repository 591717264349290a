"""The jobs a user runs end to end: `compress` (the whole loop), the hand-designed baseline, reports and the demo.

- `compress`: target -> data and teacher -> teacher logits -> search ->
  finishing the winner -> final training -> baseline -> export -> report, every finished stage on
  disk before the next begins;
- `finish`: the search's winner given what the baseline is given (its width
  filled by measurement, its own lr/KD tuning) before its final training;
- `baselines`: the hand-designed student every claim is measured against;
- `report`: report.json, report.md and the Pareto plot;
- `demo`: `compressor demo`, the main job on the bundled digits data.
"""
