"""Hardware targets and the roofline projection of a candidate's latency onto them.

catalog   the targets (specs, capabilities, prices), user-overridable data
work      the work of one inference: FLOPs per precision and bytes moved, per op group
roofline  time per op group on a target through a runtime that can run the artifact
calibrate efficiencies fitted from micro-benchmarks on the machine at hand (CPU)
calibrate_gpu  the same on a CUDA device, into the GPU model's own class (gpu-h200, ...)
"""
