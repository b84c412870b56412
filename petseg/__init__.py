"""petseg: compare frozen-backbone segmentation models on Oxford-IIIT Pet, fairly and reproducibly."""
