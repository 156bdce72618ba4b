"""edgewatch pipelines: pure compute, numpy image in, supervision.Detections out."""
