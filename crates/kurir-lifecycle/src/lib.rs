//! Being written: shutdown signal, activity guards, bounded drain.
