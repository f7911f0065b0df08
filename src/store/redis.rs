//! The shared store on Redis (see issue 4): not built yet.
