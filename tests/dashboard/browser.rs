//! The page in a real headless Chromium (placeholder, written next).
