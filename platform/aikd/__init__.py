"""aikd: alignment-invariant face image quality assessment (AI-KD) on Ray."""
__version__ = "0.1.0"
