"""Step-cache accelerators (TeaCache, FBCache, DBCache) and the policy they share."""
