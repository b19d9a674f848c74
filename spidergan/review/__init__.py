"""`spidergan review`: a local web page to look at the machine's output before training on it.

`decisions` is the log format the other stages read; `data` turns manifests into review items;
`thumbs` makes cached thumbnails; `app` is the FastAPI server and its static page.
"""
