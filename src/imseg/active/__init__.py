"""Active labeling: which images to label next (:mod:`.scores`, :mod:`.diversity`,
:mod:`.suggest`), the models' masks as pre-annotations for labeling tools
(:mod:`.annotations`), and the corrected labels back into a prepared set
(:mod:`.corrections`, :mod:`.add`). Images are *source* images throughout: a set cut
into tiles is labeled, and suggested, by the images its tiles were cut from
(:mod:`.images`)."""
