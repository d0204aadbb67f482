"""Lightning callbacks: adapter export, and the ViRL pipeline (rollout, render, reward logging)."""
