"""The three trained networks: autoencoder, A2L (audio -> landmarks), L2V (landmarks -> video latent)."""
