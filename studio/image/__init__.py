"""The Image tab's pieces: Qt-free drawing, colour and worker code, and its widgets."""
