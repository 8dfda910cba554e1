//! Pod Security Standards checks (to be written).
