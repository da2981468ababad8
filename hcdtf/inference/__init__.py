"""Reading trained and exported models: scoring with test-time augmentation (`scoring`), a loader
for every exported format (`backends`), `hcdtf predict` (`predict`), the Beam pipeline (`beam`),
Grad-CAM (`explain`) and patch embeddings (`embed`)."""
