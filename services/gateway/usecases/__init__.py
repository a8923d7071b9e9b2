"""The gateway's use cases, one module each, every function taking a `Deps` first:

    albums     create, list, describe and delete albums
    ingest     add images (checked, embedded, blobs then vectors)
    search     find an album's images nearest a query image
    images     one image's metadata, bytes and thumbnail; list and delete images
    reembed    re-embed an album with the extractor's current model
"""
