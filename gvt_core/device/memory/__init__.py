"""Graphics memory of a vGPU: GGTT, shadow PPGTTs and the guest page tracking they rest on."""
