"""Images: autoregressive image models (Gated PixelCNN) run with ONNX Runtime (numpy only).

Modules: `model` (loading from a card), `sampler` (naive and fast pixel-by-pixel sampling,
completion / inpainting, posterior-aware resampling, scoring), `png` (reading and writing
images and masks), `data` (the MNIST .npz files), `commands` (the CLI), `bench`.
"""
