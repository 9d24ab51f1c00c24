"""One adapter per recommender under evaluation, all behind `base.System`."""
