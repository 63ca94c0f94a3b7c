"""Model providers behind `base.ModelSession`: one module or package each."""
