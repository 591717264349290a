"""The constrained search over student families (`loop`) and its trial store (`store`).

`loop.Search` proposes, screens and trains families under a target's
budgets; `store.TrialStore` commits every evaluation to `trials.sqlite` as it
ends, so a run resumes after a crash.
"""
