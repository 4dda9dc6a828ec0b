"""The face detailer (`ultralytics` in a request): detect faces with an ultralytics YOLO detector, re-sample each
face in a square crop at `inpaintSize`, paste it back through a feathered mask.

Pure modules: `fields` (names shared by node, compiler and exporter), `geometry` (boxes, crops, sizes),
`settings` (the request's ranges applied to widgets), `report` (what was detected, and the response's warnings).
Adapters: `masks` (torch + kornia), `detector` (ultralytics + ComfyUI's model folders), `engine` (ComfyUI
sampling through samplers.passes).
"""
