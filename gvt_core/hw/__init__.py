"""The simulated GEN8-class host GPU and the host system memory it reaches by DMA."""
