"""The media repository: uploads, downloads, remote media, thumbnails and URL previews."""
