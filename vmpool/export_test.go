package vmpool

// RefillDelay exposes refillDelay to the package's external tests.
const RefillDelay = refillDelay
