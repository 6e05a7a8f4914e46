"""capdistill's Hydra sweeper (`hydra/sweeper=checked`, the default of every capdistill sweep). Hydra takes
plugins only from the `hydra_plugins` namespace, so it lives here and not in the `capdistill` package."""
