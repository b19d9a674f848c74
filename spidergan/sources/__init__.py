"""Image sources for the scrape stage: synthetic (the offline default), flickr, folder."""
