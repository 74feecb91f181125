"""pah_jax: Prototype-Augmented Hypernetworks (De La Fuente et al., 2025) in JAX/Flax."""

__version__ = "0.1.0"
