"""The guest side: the GuestPort protocol and the guest-driver model."""
