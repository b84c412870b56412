"""Studies run through the Tune runner: the Pets comparison (`run_study`) and VOC / ADE20K head pretraining."""
