"""facelab.book: the replication book's tooling (not needed to use the models, attacks or metrics).

* :mod:`facelab.book.project` -- the project root (``--root``, ``$FACELAB_ROOT`` or searched upward) and
  its chapter notebooks;
* :mod:`facelab.book.runner` -- a chapter's parameters (read, validated) and its headless papermill run;
* :mod:`facelab.book.run` -- ``facelab run CHAPTER``;
* :mod:`facelab.book.status` -- the "Replication status" page from the results cards;
* :mod:`facelab.book.build` -- ``facelab book`` (Jupyter Book 1.x HTML).
"""
