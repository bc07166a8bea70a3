"""Training advocate policies: evolution strategies for one-shot games (``es``), PPO for multi-round ones (``ppo``)."""
